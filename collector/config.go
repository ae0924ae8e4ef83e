package collector

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v3"
)

// ClusterLabel is the external label every collector must carry: it is how
// the federator, the topology and the alerts tell clusters apart.
const ClusterLabel = "cluster"

// Config is a collector's configuration: a Prometheus configuration file,
// loaded by Prometheus' own loader, plus Panorama's kubernetes_auto block.
type Config struct {
	// Prometheus holds the Prometheus part, with the auto-configured scrape
	// jobs already appended.
	Prometheus *config.Config
	// Auto is the kubernetes_auto block, nil when absent.
	Auto *AutoConfig
	// Cluster is the value of the required cluster external label.
	Cluster string
}

// LoadFile reads and validates a collector configuration file. Errors name
// the file and, where the YAML parser knows it, the line.
func LoadFile(filename string, logger *slog.Logger) (*Config, error) {
	content, err := os.ReadFile(filename)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	cfg, err := Load(content, logger)
	if err != nil {
		return nil, fmt.Errorf("configuration file %s: %w", filename, err)
	}
	cfg.Prometheus.SetDirectory(dirOf(filename))
	return cfg, nil
}

func dirOf(filename string) string {
	if i := strings.LastIndexByte(filename, '/'); i >= 0 {
		return filename[:i]
	}
	return "."
}

// Load parses a collector configuration held in memory.
func Load(content []byte, logger *slog.Logger) (*Config, error) {
	promPart, autoPart, autoLine, err := splitAutoBlock(content)
	if err != nil {
		return nil, err
	}
	pcfg, err := config.Load(string(promPart), logger)
	if err != nil {
		return nil, withLine(promPart, err)
	}
	cluster := pcfg.GlobalConfig.ExternalLabels.Get(ClusterLabel)
	if cluster == "" {
		return nil, fmt.Errorf("line %d: global.external_labels must set a non-empty %q label: it names this cluster in every answer the collector gives",
			keyLine(content, "global"), ClusterLabel)
	}
	cfg := &Config{Prometheus: pcfg, Cluster: cluster}
	if autoPart != nil {
		auto, err := parseAutoConfig(autoPart, autoLine)
		if err != nil {
			return nil, err
		}
		cfg.Auto = auto
		jobs, err := auto.ScrapeConfigs(pcfg.GlobalConfig, pcfg.ScrapeConfigs)
		if err != nil {
			return nil, fmt.Errorf("kubernetes_auto (line %d): %w", autoLine, err)
		}
		pcfg.ScrapeConfigs = append(pcfg.ScrapeConfigs, jobs...)
	}
	return cfg, nil
}

// splitAutoBlock cuts the top-level kubernetes_auto block out of the file,
// replacing its lines with blank ones so that Prometheus' loader still
// reports the lines of the original file. It returns the block as its own
// document (nil when absent) and the line it starts on.
func splitAutoBlock(content []byte) (prom, auto []byte, line int, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		// Prometheus' loader gives the better message; let it speak.
		return content, nil, 0, nil
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return content, nil, 0, nil
	}
	top := doc.Content[0]
	lines := bytes.SplitAfter(content, []byte("\n"))
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "kubernetes_auto" {
			continue
		}
		start := top.Content[i].Line - 1
		end := len(lines)
		if i+2 < len(top.Content) {
			end = top.Content[i+2].Line - 1
			// Keep comments that precede the next key out of the block.
			for end > start+1 && isBlankOrComment(lines[end-1]) {
				end--
			}
		}
		if top.Content[i].Column != 1 {
			return nil, nil, 0, errors.New("kubernetes_auto must be a top-level key")
		}
		var blockBuf, promBuf bytes.Buffer
		for j, l := range lines {
			if j >= start && j < end {
				blockBuf.Write(l)
				if bytes.HasSuffix(l, []byte("\n")) {
					promBuf.WriteByte('\n')
				}
				continue
			}
			promBuf.Write(l)
		}
		return promBuf.Bytes(), blockBuf.Bytes(), start + 1, nil
	}
	return content, nil, 0, nil
}

func isBlankOrComment(l []byte) bool {
	t := bytes.TrimSpace(l)
	return len(t) == 0 || t[0] == '#'
}

// keyLine is the line of a top-level key, or 1 when it is absent.
func keyLine(content []byte, key string) int {
	var doc yaml.Node
	if yaml.Unmarshal(content, &doc) != nil || len(doc.Content) == 0 {
		return 1
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == key {
			return top.Content[i].Line
		}
	}
	return 1
}
