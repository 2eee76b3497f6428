# The garrison image: a worker or a listener, depending on the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY tables ./tables
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV GARRISON_DATA_DIR=/var/lib/garrison
VOLUME /var/lib/garrison
CMD ["garrison", "worker", "examples.chatbot.app"]
