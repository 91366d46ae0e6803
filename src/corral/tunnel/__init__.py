"""remotedialer-compatible tunnel: frames, sessions, session manager, transports and dialer."""
