"""Providers: a protocol codec + an endpoint + a transport, behind one interface."""
