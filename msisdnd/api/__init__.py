"""The HTTP side: Klein routes that only translate HTTP to verification steps."""
