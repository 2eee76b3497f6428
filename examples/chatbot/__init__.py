"""casern's chatbot example, on garrison: inquiries, a periodic timeout check, and an
email-support listener that escalates conversations nobody answered."""
