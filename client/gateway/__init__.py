"""The gateway: agents over HTTP, SSE and WebSocket for web apps (`perennial gateway`)."""
