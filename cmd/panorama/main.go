// Command panorama is the one binary of every Panorama role: each role is a
// subcommand whose file here parses its flags and wires the role's package.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/version"

	"github.com/panorama-obs/panorama/internal/server"
)

// setupFunc runs a role once its flags are parsed.
type setupFunc func(logCfg *promslog.Config) error

func main() {
	app := kingpin.New(filepath.Base(os.Args[0]), "Panorama: federated observability for many Kubernetes clusters.").
		Version(version.Print("panorama"))
	app.HelpFlag.Short('h')
	logCfg := server.LogFlags(app)

	roles := map[string]setupFunc{}
	registerCollector(app, roles)
	registerFederator(app, roles)
	registerTracing(app, roles)
	registerRCA(app, roles)
	registerVersion(app, roles)

	cmd, err := app.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "panorama: %s\n", err)
		app.Usage(os.Args[1:])
		os.Exit(2)
	}
	if err := roles[cmd](logCfg); err != nil {
		fmt.Fprintf(os.Stderr, "panorama %s: %s\n", cmd, err)
		os.Exit(1)
	}
}
