package interop

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tokenlab/lab"
)

var peerChromium = peer{"/usr/bin/chromium", "chromium"}

// chromium runs headless Chromium with args in its own process group, which is killed when it
// returns: Chromium leaves helper processes behind otherwise.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1600,1200"}
	cmd := exec.CommandContext(ctx, peerChromium.path, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers that outlived the browser
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes()
}

// The lab's HTML report, opened in headless Chromium: the DOM holds a timeline per run with a
// mark per prompt and signature, and the screenshot shows the marks' colours.
func TestLabReportInChromium(t *testing.T) {
	need(t, peerChromium)
	sc, err := lab.Load("pkcs11-applications")
	if err != nil {
		t.Fatal(err)
	}
	var runs []*lab.Result
	prompts := 0
	for _, p := range []string{"strict-2fa", "safenet-single-logon"} {
		r, err := lab.Run(context.Background(), sc, p, lab.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Steps {
			prompts += s.Prompts
		}
		runs = append(runs, r)
	}
	dir := t.TempDir()
	report := filepath.Join(dir, "report.html")
	var b bytes.Buffer
	if err := lab.WriteHTML(&b, runs); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(report, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	dom := string(chromium(t, "--dump-dom", "file://"+report))
	if n := strings.Count(dom, `<svg class="timeline"`); n != 2 {
		t.Errorf("%d timelines in the rendered DOM, want 2", n)
	}
	// One circle per prompt in the timelines, and one in the legend.
	if n := strings.Count(dom, `<circle class="prompt"`); n != prompts+1 {
		t.Errorf("%d prompt marks in the rendered DOM, want %d", n, prompts+1)
	}
	for _, want := range []string{`class="sign"`, `class="band"`, "safenet-single-logon VIOLATES pin-every-connection"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}

	shot := filepath.Join(dir, "report.png")
	chromium(t, "--screenshot="+shot, "file://"+report)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours := map[string][3]uint32{"prompt": {0xf5, 0x9e, 0x0b}, "signature": {0x25, 0x63, 0xeb}, "violation band": {0xfd, 0xe8, 0xea}}
	for name, c := range colours {
		if n := countColour(img, c); n < 20 {
			t.Errorf("the screenshot has %d pixels of the %s colour; the timeline was not drawn", n, name)
		}
	}
}

func countColour(img image.Image, want [3]uint32) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r>>8, want[0]) && near(g>>8, want[1]) && near(bl>>8, want[2]) {
				n++
			}
		}
	}
	return n
}

func near(a, b uint32) bool { return a+3 >= b && b+3 >= a }
