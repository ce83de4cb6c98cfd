"""The admin control port: a line-based command protocol on loopback."""
