"""Happen-style nodes: orders that read inventory through a view, and a dashboard that
collects a summary of every order of its tenant."""
