"""The runtime: Faust dispatch worker, timer delivery, listener runner. Kept thin."""
