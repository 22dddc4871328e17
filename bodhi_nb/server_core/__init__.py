"""Routing and the single chat-forwarding path shared by HTTP handlers, client and widgets."""
