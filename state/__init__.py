"""The state machine and its storage. Never imports ``node``."""
