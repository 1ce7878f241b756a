"""Identity: users, sessions, tokens, magic links, mail, roles and audit."""
