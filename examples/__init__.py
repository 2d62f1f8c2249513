"""Applications built on Perennial's public API only; each is loaded like any user's
application (`--app examples.travel`)."""
