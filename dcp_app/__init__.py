"""The application service: commands in, durable events out, read models beside them."""
