"""Talking faces from speech: Wav2Lip (its lip-sync expert and generator) on shared data."""
