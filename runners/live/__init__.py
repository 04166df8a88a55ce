"""The live run mode: the graph streaming from Pub/Sub (the emulator locally) on the local runner."""
