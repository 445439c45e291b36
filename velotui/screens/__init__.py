"""The console's screens and dialogs, one module each (with their .tcss beside them)."""
