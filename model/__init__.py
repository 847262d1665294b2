"""BTLM: GPT-2-style decoder with SwiGLU, ALiBi and muP."""
