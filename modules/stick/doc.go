// Package stick brings HAProxy-style stick tables to Caddy: the stick_tables app, HTTP handlers and matchers, listener and layer4 tracking, an lb policy and an admin API.
package stick
