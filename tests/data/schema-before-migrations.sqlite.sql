-- The schema as db.create_all() made it before migrations existed (commit 57fc45c),
-- for sqlite: tests/test_migrations.py upgrades a database made with it.

CREATE TABLE clients (
	id INTEGER NOT NULL,
	client_id VARCHAR(64) NOT NULL,
	name VARCHAR(200) NOT NULL,
	secret_hash VARCHAR(256) NOT NULL,
	scope VARCHAR(1000) NOT NULL,
	grant_types VARCHAR(200) NOT NULL,
	token_lifetime INTEGER,
	disabled BOOLEAN NOT NULL,
	previous_secret_hash VARCHAR(256),
	previous_secret_expires DATETIME,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (client_id)
);

CREATE TABLE rate_limits (
	name VARCHAR(255) NOT NULL,
	count INTEGER NOT NULL,
	expires_at FLOAT NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE items (
	id INTEGER NOT NULL,
	client_pk INTEGER NOT NULL,
	name VARCHAR(200) NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(client_pk) REFERENCES clients (id) ON DELETE CASCADE
);

CREATE INDEX ix_items_client_pk ON items (client_pk);

CREATE TABLE tokens (
	id INTEGER NOT NULL,
	access_token_hash VARCHAR(64) NOT NULL,
	client_pk INTEGER NOT NULL,
	scope VARCHAR(1000) NOT NULL,
	issued_at DATETIME NOT NULL,
	expires DATETIME NOT NULL,
	revoked_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (access_token_hash),
	FOREIGN KEY(client_pk) REFERENCES clients (id) ON DELETE CASCADE
);

CREATE INDEX ix_tokens_client_pk ON tokens (client_pk);

CREATE INDEX ix_tokens_expires ON tokens (expires);
