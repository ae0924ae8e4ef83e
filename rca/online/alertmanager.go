package online

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/panorama-obs/panorama/rca"
)

// maxAlertsBytes bounds an Alertmanager answer.
const maxAlertsBytes = 64 << 20

// fetchAlertmanager reads the alerts an Alertmanager API v2 holds now
// (GET /api/v2/alerts, silenced and inhibited ones included: they are
// still signs of trouble) and keeps those firing at some point between
// start and end. Alertmanager only knows alerts that are active or
// recently resolved, so it serves captures of incidents in progress.
func fetchAlertmanager(ctx context.Context, client *http.Client, base string, start, end, now time.Time) ([]rca.Alert, error) {
	u := strings.TrimRight(base, "/") + "/api/v2/alerts"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("alertmanager %s: %w", base, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("alertmanager %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAlertsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("alertmanager %s: read: %w", base, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("alertmanager %s: HTTP %s: %s", base, resp.Status, firstLine(body))
	}
	if len(body) > maxAlertsBytes {
		return nil, fmt.Errorf("alertmanager %s: answer larger than %d MiB", base, maxAlertsBytes>>20)
	}
	var got []rca.Alert
	if err := json.Unmarshal(body, &got); err != nil {
		return nil, fmt.Errorf("alertmanager %s: not a list of API v2 alerts: %w", base, err)
	}
	var out []rca.Alert
	for _, a := range got {
		if len(a.Labels) == 0 || a.StartsAt.After(end) {
			continue
		}
		// An active alert's endsAt is when it would lapse without news,
		// in the future: it is still firing.
		if !a.EndsAt.IsZero() && a.EndsAt.After(now) {
			a.EndsAt = time.Time{}
		}
		if !a.EndsAt.IsZero() && a.EndsAt.Before(start) {
			continue
		}
		a.StartsAt, a.EndsAt = a.StartsAt.UTC(), a.EndsAt.UTC()
		out = append(out, a)
	}
	return out, nil
}

// mergeAlerts adds to primary the alerts of extra whose labels no alert of
// primary has.
func mergeAlerts(primary, extra []rca.Alert) []rca.Alert {
	seen := map[string]bool{}
	for _, a := range primary {
		seen[labelKey(a.Labels)] = true
	}
	out := slices.Clone(primary)
	for _, a := range extra {
		if k := labelKey(a.Labels); !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b rca.Alert) int { return a.StartsAt.Compare(b.StartsAt) })
	return out
}

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}
