package embedded

import (
	"testing"
	"time"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(Options{Dir: t.TempDir(), Retention: 72 * time.Hour}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
