"""Lightricks LTX-2.3 (joint audio + video); arrives with the LTX-2.3 core issue."""
