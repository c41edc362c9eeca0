// Package opstest drives the ops page in a headless Chromium for tests: the
// ops package's own page test and the live-engine e2e test share it.
package opstest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// RequireBrowserEnv makes a missing browser a test failure instead of a skip.
const RequireBrowserEnv = "SIDEDNS_REQUIRE_BROWSER"

// BrowserPathEnv overrides where the Chromium binary is looked for.
const BrowserPathEnv = "SIDEDNS_CHROMIUM"

// ArtifactsEnv names the directory for screenshots; the default is
// os.TempDir()/sidedns-artifacts.
const ArtifactsEnv = "SIDEDNS_ARTIFACTS"

// startTimeout bounds the browser launch; a cold Chromium start on a loaded
// 2-core machine takes a few seconds.
const startTimeout = 30 * time.Second

// BrowserPath returns the Chromium binary to use, or "" if none is installed.
func BrowserPath() string {
	if p := os.Getenv(BrowserPathEnv); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// NewBrowser starts a headless Chromium and returns a chromedp context for one
// tab; the browser stops when the test ends. With no browser installed it
// skips the test loudly, or fails it when SIDEDNS_REQUIRE_BROWSER=1.
func NewBrowser(t testing.TB) context.Context {
	t.Helper()
	path := BrowserPath()
	if path == "" {
		msg := "BROWSER TEST NOT RUN: no chromium found (install Debian's chromium: " +
			"apt-get install -y --no-install-recommends chromium, or set " + BrowserPathEnv + ")"
		if os.Getenv(RequireBrowserEnv) == "1" {
			t.Fatal(msg + "; " + RequireBrowserEnv + "=1 makes this a failure")
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		// The browser must not resolve any name: tests only talk to
		// loopback, and this guarantees no query leaves the machine.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first Run starts the browser and binds its life to ctx, so it gets
	// no timeout of its own; a watchdog bounds the launch instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium %s: %v", path, err)
		}
	case <-time.After(startTimeout):
		cancelCtx()
		t.Fatalf("start chromium %s: no answer after %v", path, startTimeout)
	}
	return ctx
}

// Open navigates the tab to url and waits for the page to load.
func Open(ctx context.Context, url string) error {
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("open %s: %w", url, err)
	}
	return nil
}

// WaitText waits until the first element matching the CSS selector sel
// shows text (innerText, so only what a person sees).
func WaitText(ctx context.Context, sel, text string) error {
	return poll(ctx, sel, text, true)
}

// WaitNoText waits until no element matching sel shows text; a missing
// element counts as not showing it.
func WaitNoText(ctx context.Context, sel, text string) error {
	return poll(ctx, sel, text, false)
}

func poll(ctx context.Context, sel, text string, want bool) error {
	// Arguments travel as JSON literals, so quotes in them cannot break out.
	s, _ := json.Marshal(sel)
	x, _ := json.Marshal(text)
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%s);
		return (!!e && e.innerText.includes(%s)) === %t; })()`, s, x, want)
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout))); err != nil {
		verb := "wait for"
		if !want {
			verb = "wait for the end of"
		}
		return fmt.Errorf("%s %q in %s: %w", verb, text, sel, err)
	}
	return nil
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func Eval[T any](ctx context.Context, expr string) (T, error) {
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		return v, fmt.Errorf("evaluate %q: %w", expr, err)
	}
	return v, nil
}

// ArtifactsDir returns (and creates) the directory for test artifacts.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sidedns-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create artifacts dir: %v", err)
	}
	return dir
}

// Screenshot saves a full-page PNG named name (".png" is added) in
// ArtifactsDir, logs its path and returns it.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("take screenshot: %v", err)
	}
	path := filepath.Join(ArtifactsDir(t), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
