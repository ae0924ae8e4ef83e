package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/go-kit/log"
)

// kitLogger lets the Thanos packages the roles are built from, which
// log through go-kit, log into the role's slog logger at the level
// they asked for.
type kitLogger struct{ l *slog.Logger }

// GoKitLogger adapts slog for the Thanos packages, which log through go-kit.
func GoKitLogger(l *slog.Logger) log.Logger { return kitLogger{l} }

func (k kitLogger) Log(keyvals ...any) error {
	lvl := slog.LevelInfo
	msg := ""
	attrs := make([]any, 0, len(keyvals))
	for i := 0; i < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		var val any = "(MISSING)"
		if i+1 < len(keyvals) {
			val = keyvals[i+1]
		}
		switch key {
		case "level":
			lvl = kitLevel(fmt.Sprint(val))
		case "msg":
			msg = fmt.Sprint(val)
		default:
			// Thanos' errors carry stack traces that slog would print
			// (%+v); an operator needs the message.
			if err, ok := val.(error); ok {
				val = err.Error()
			}
			attrs = append(attrs, key, val)
		}
	}
	k.l.Log(context.Background(), lvl, msg, attrs...)
	return nil
}

func kitLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

var _ log.Logger = kitLogger{}
