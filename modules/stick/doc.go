// Package stick brings HAProxy-style stick tables to Caddy: the
// stick_tables app (global option stick_table), the track, tarpit,
// stick_inc, stick_set and stick_ban HTTP handlers, the stick request
// matcher and {http.stick.<table>.<data>} placeholders, the
// caddy.listeners.stick listener wrapper, the layer4.handlers.track handler
// and layer4.matchers.stick matcher, the stick lb policy for reverse_proxy,
// the /stick-tables/ admin API and Prometheus metrics. The engine lives in
// the table subpackage, which imports no Caddy package.
package stick
