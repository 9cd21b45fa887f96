"""Who is calling and may they do it: identities, authenticators, authorizers and the server
interceptor that applies them."""
