// Writes real zap, logrus and zerolog output for tests/exporter/test_presets.py.
// Run once; the output files are committed so the tests need no Go toolchain. With Debian's
// packages (golang-go golang-go.uber-zap-dev golang-github-sirupsen-logrus-dev
// golang-github-rs-zerolog-dev), in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tests/exporter/samples/make_samples.go tests/exporter/samples
//
// Every file logs the same story (see SCRIPT in make_samples.py); fatal is logged with the
// library's exit hook disabled so the program goes on.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type noExit struct{}

func (noExit) OnWrite(*zapcore.CheckedEntry, []zapcore.Field) {}

type PaymentDeclinedError struct{ order int }

func (e *PaymentDeclinedError) Error() string {
	return fmt.Sprintf("card declined for order %d", e.order)
}

var connRefused = errors.New("dial tcp 10.0.0.5:5432: connect: connection refused")

func zapSample(dir string) {
	cfg := zap.NewProductionConfig() // JSON, epoch-seconds "ts", caller, stacktrace on error
	cfg.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	out := filepath.Join(dir, "zap.log")
	_ = os.Remove(out) // zap appends
	cfg.OutputPaths = []string{out}
	cfg.Sampling = nil
	log, err := cfg.Build(zap.WithFatalHook(noExit{}))
	if err != nil {
		panic(err)
	}
	log = log.Named("checkout")
	log.Debug("cache miss for key user:42")
	log.Info("request completed", zap.Float64("duration_ms", 12.5))
	log.Warn("slow query took 5400ms")
	log.Error("database connection failed", zap.Error(connRefused))
	log.Error("payment processing failed for order 1234",
		zap.Error(&PaymentDeclinedError{1234}), zap.String("error_type", "PaymentDeclinedError"))
	log.DPanic("invariant broken")
	func() {
		defer func() { _ = recover() }()
		log.Panic("nil map write")
	}()
	log.Fatal("out of memory")
	_ = log.Sync()
}

func logrusSample(dir string) {
	f, err := os.Create(filepath.Join(dir, "logrus.log"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	log := logrus.New()
	log.SetOutput(f)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.SetLevel(logrus.TraceLevel)
	log.ExitFunc = func(int) {}
	l := log.WithField("component", "billing")
	l.Trace("starting worker 3")
	l.Debug("cache miss for key user:42")
	l.WithField("duration_ms", 12.5).Info("request completed")
	l.Warn("slow query took 5400ms")
	l.WithError(connRefused).Error("database connection failed")
	l.WithError(&PaymentDeclinedError{1234}).WithField("error_type", "PaymentDeclinedError").
		Error("payment processing failed for order 1234")
	l.Fatal("out of memory")
	func() {
		defer func() { _ = recover() }()
		l.Panic("nil map write")
	}()
}

// logrus's TextFormatter without a terminal writes logfmt
func logrusTextSample(dir string) {
	f, err := os.Create(filepath.Join(dir, "logrus-logfmt.log"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	log := logrus.New()
	log.SetOutput(f)
	log.SetFormatter(&logrus.TextFormatter{DisableColors: true})
	log.SetLevel(logrus.TraceLevel)
	log.ExitFunc = func(int) {}
	l := log.WithField("component", "billing")
	l.Trace("starting worker 3")
	l.Debug("cache miss for key user:42")
	l.WithField("duration_ms", 12.5).Info("request completed")
	l.Warn("slow query took 5400ms")
	l.WithError(connRefused).Error("database connection failed")
	l.WithError(&PaymentDeclinedError{1234}).WithField("error_type", "PaymentDeclinedError").
		Error("payment processing failed for order 1234")
	l.Fatal("out of memory")
}

func zerologSample(dir string) {
	f, err := os.Create(filepath.Join(dir, "zerolog.log"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	log := zerolog.New(f).Level(zerolog.TraceLevel).With().Timestamp().
		Str("service", "search").Logger()
	log.Trace().Msg("starting worker 3")
	log.Debug().Msg("cache miss for key user:42")
	log.Info().Float64("duration_ms", 12.5).Msg("request completed")
	log.Warn().Msg("slow query took 5400ms")
	log.Error().Err(connRefused).Msg("database connection failed")
	log.Error().Err(&PaymentDeclinedError{1234}).Str("error_type", "PaymentDeclinedError").
		Msg("payment processing failed for order 1234")
	log.WithLevel(zerolog.FatalLevel).Msg("out of memory") // Fatal() would exit
	log.WithLevel(zerolog.PanicLevel).Msg("nil map write")
}

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	logrusSample(dir)
	logrusTextSample(dir)
	zerologSample(dir)
	zapSample(dir)
}
