"""auth service: Steam OpenID login and the JWT access/refresh tokens every other service trusts."""
