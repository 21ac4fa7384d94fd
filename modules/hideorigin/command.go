package hideorigin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/audit"
)

// Exit codes of `caddy origin-audit`.
const (
	AuditClean     = 0
	AuditLeaks     = 1
	AuditCannotRun = 2
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "origin-audit",
		Usage: "--site <url> --origin <addr> [--origin <addr>...] [--origin-host <name>...] [--paths <file>] [--only-paths] [--no-bypass] [--timeout <dur>] [--json]",
		Short: "Looks for the origin's identity in everything a site sends to clients",
		Long: `
Requests a set of paths on --site as a client would (pages that exist,
redirect, 404 and fail, plus a TRACE), follows same-site redirects, and reports
every place where an origin identity (--origin addresses, --origin-host names,
in any form: IP, [IPv6], host, host:port, http/https/ws/wss URL) appears:
response headers, cookies, redirect chains, bodies (gzip, zstd and deflate
are decoded), error pages (also stack traces) and the site certificate's
names. Origin software headers (Server, X-Powered-By, ...) are reported as
fingerprints.

Then it checks for bypasses from where it runs: does the origin answer
directly (with the site's Host header), and does it present the site's
certificate (what Internet-wide certificate scans find)?

--paths names a file with one extra path per line.

Exit code: 0 clean, 1 leaks found, 2 the audit could not run.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("site", "", "Public URL of the site (https://example.com)")
			cmd.Flags().StringSlice("origin", nil, "Origin address to look for and probe (repeatable)")
			cmd.Flags().StringSlice("origin-host", nil, "Origin host name to look for (repeatable)")
			cmd.Flags().String("paths", "", "File with extra paths, one per line")
			cmd.Flags().Bool("only-paths", false, "Request only the --paths file's paths")
			cmd.Flags().Bool("no-bypass", false, "Skip the direct-access and certificate checks")
			cmd.Flags().Duration("timeout", 10*time.Second, "Timeout of each request")
			cmd.Flags().Bool("json", false, "Print the report as JSON")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdOriginAudit)
		},
	})
}

func cmdOriginAudit(fl caddycmd.Flags) (int, error) {
	cfg := audit.Config{Site: fl.String("site"), OnlyPaths: fl.Bool("only-paths"), NoBypass: fl.Bool("no-bypass")}
	var err error
	if cfg.Origins, err = fl.GetStringSlice("origin"); err != nil {
		return AuditCannotRun, err
	}
	if cfg.OriginHosts, err = fl.GetStringSlice("origin-host"); err != nil {
		return AuditCannotRun, err
	}
	if cfg.Timeout, err = fl.GetDuration("timeout"); err != nil {
		return AuditCannotRun, err
	}
	if file := fl.String("paths"); file != "" {
		if cfg.Paths, err = audit.ReadPaths(file); err != nil {
			return AuditCannotRun, fmt.Errorf("--paths: %v", err)
		}
	}
	code, err := RunAudit(context.Background(), cfg, fl.Bool("json"), os.Stdout)
	return code, err
}

// RunAudit runs the audit and prints the report; it returns the command's
// exit code (and an error for codes 1 and 2).
func RunAudit(ctx context.Context, cfg audit.Config, asJSON bool, out *os.File) (int, error) {
	report, err := audit.Run(ctx, cfg)
	if err != nil {
		return AuditCannotRun, fmt.Errorf("origin-audit could not run: %v", err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return AuditCannotRun, err
		}
	} else {
		report.WriteText(out)
	}
	if !report.Clean() {
		return AuditLeaks, fmt.Errorf("origin-audit: %d leaks found", len(report.Findings))
	}
	return AuditClean, nil
}
