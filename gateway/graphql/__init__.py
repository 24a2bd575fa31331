"""GraphQL at /graphql: the schema, its context and the router the app mounts."""
