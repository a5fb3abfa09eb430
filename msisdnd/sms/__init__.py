"""What the rest of msisdnd knows of SMS: messages, receivers, the sender.

Nothing here knows SMPP; the carrier side implements these interfaces.
"""
