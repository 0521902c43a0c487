"""Who is asking, and what they may see: authentication (JWT), actors, SMART scopes, and the
access decision compiled into storage filters."""
