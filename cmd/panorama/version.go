package main

import (
	"fmt"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/version"
)

func registerVersion(app *kingpin.Application, roles map[string]setupFunc) {
	cmd := app.Command("version", "Print the version and build information.")
	roles[cmd.FullCommand()] = func(*promslog.Config) error {
		fmt.Println(version.Print("panorama"))
		return nil
	}
}
