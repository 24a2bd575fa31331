"""The edge: FastAPI translating GraphQL and WebSocket traffic into internal gRPC calls."""
