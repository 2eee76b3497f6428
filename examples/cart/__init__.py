"""Cart updates: an update that returns the cart (Temporal's addItemToCart, on garrison)."""
