"""HTTP and WebSocket routes: decode and validate, call the engine, render the answer."""
