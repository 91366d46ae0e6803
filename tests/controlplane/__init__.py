"""Unit tests of the control-plane code: no cluster, no network beyond loopback."""
