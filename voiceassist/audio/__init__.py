"""Audio: the caller's recording (reading it, finding speech in it) and synthesised speech made
into what Asterisk plays (8 kHz μ-law, converted in-process or by ffmpeg)."""
