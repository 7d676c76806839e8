package lab

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
	"text/tabwriter"

	"tokenlab/middleware"
)

// WriteTable writes a run as a table: a row per step, then the verdicts.
func WriteTable(w io.Writer, r *Result) error {
	fmt.Fprintf(w, "%s under %s\n", r.Scenario, r.Profile)
	if r.Title != "" {
		fmt.Fprintf(w, "  %s\n", r.Title)
	}
	fmt.Fprintf(w, "  profile reproduces: %s\n\n", r.Reproduces)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  line\tat\tstep\tapplication\tprompts\tcached re-uses\tcard VERIFYs\tsignatures\tresult\tverdict")
	for _, s := range r.Steps {
		verdict := "ok"
		if len(s.Violations) > 0 {
			verdict = "VIOLATES " + strings.Join(s.Violations, ", ")
		}
		fmt.Fprintf(tw, "  %d\t+%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Line, fmtDuration(s.At), s.Text, orDash(s.App),
			s.Prompts, s.Reuses, s.Verifies, s.Signatures, s.Result(), verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, v := range r.Verdicts {
		fmt.Fprintf(w, "  %s\n", VerdictLine(r, v))
	}
	_, err := fmt.Fprintln(w)
	return err
}

// VerdictLine is the one-line verdict of a rule on a run, as `make demo` prints it and CI
// greps it: "verdict: safenet-single-logon violates pin-every-connection (lines 14, 16)".
func VerdictLine(r *Result, v Verdict) string {
	if v.OK {
		return fmt.Sprintf("verdict: %s complies with %s", r.Profile, v.Rule)
	}
	lines := make([]string, len(v.Steps))
	for i, l := range v.Steps {
		lines[i] = fmt.Sprint(l)
	}
	return fmt.Sprintf("verdict: %s VIOLATES %s (line %s)", r.Profile, v.Rule, strings.Join(lines, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes the runs as one JSON document.
func WriteJSON(w io.Writer, rs []*Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Runs []*Result `json:"runs"`
	}{rs})
}

// The timeline's geometry, in SVG user units.
const (
	tlLeft   = 150 // room for the lane names
	tlStep   = 64  // width of a step's column
	tlLane   = 44  // height of a lane
	tlTop    = 30  // room for the step numbers
	tlMarkSp = 14  // spacing of the marks inside a column
)

type mark struct {
	X, Y  int
	Kind  string // prompt, sign, reuse, verify, removed, inserted
	Title string
}

type timeline struct {
	Width, Height int
	Lanes         []lane
	Columns       []column
	Marks         []mark
}

type lane struct {
	Name string
	Y    int
}

type column struct {
	X, Line   int
	Text      string
	Violation string // the rules broken there, or ""
}

// buildTimeline lays out a run: a column per step, a lane per application (and one for the
// card), and a mark per prompt, cached re-use, VERIFY, signature, removal and insertion.
func buildTimeline(r *Result) timeline {
	lanes := []string{"card"}
	laneOf := map[string]int{"card": 0}
	for _, ev := range r.Events {
		if _, ok := laneOf[ev.Application]; !ok && ev.Application != "" {
			laneOf[ev.Application] = len(lanes)
			lanes = append(lanes, ev.Application)
		}
	}
	t := timeline{Width: tlLeft + tlStep*len(r.Steps) + 20, Height: tlTop + tlLane*len(lanes) + 10}
	for i, n := range lanes {
		t.Lanes = append(t.Lanes, lane{Name: n, Y: tlTop + tlLane*i + tlLane/2})
	}
	for i, s := range r.Steps {
		x := tlLeft + tlStep*i
		t.Columns = append(t.Columns, column{X: x, Line: s.Line, Text: s.Text, Violation: strings.Join(s.Violations, ", ")})
		used := map[int]int{} // lane → marks placed in this column
		for _, ev := range r.Events[s.First:s.End] {
			kind := ""
			switch ev.Kind {
			case middleware.EventPrompt:
				kind = "prompt"
			case middleware.EventCacheReuse, middleware.EventCardVerified:
				kind = "reuse"
			case middleware.EventVerify:
				kind = "verify"
			case middleware.EventSign, middleware.EventDecrypt, middleware.EventKeyAgreement:
				kind = "sign"
			case middleware.EventRemoved:
				kind = "removed"
			case middleware.EventInserted:
				kind = "inserted"
			default:
				continue
			}
			l := laneOf[ev.Application]
			if kind == "removed" || kind == "inserted" {
				l = 0
			}
			n := used[l]
			used[l]++
			if n >= (tlStep-8)/tlMarkSp {
				continue // a crowded column shows its first marks; the table has the counts
			}
			title := fmt.Sprintf("%s: %s", ev.Application, ev.Kind)
			if ev.Slot != "" {
				title += " slot " + ev.Slot
			}
			if ev.Reason != "" {
				title += " (" + ev.Reason + ")"
			}
			t.Marks = append(t.Marks, mark{X: x + 8 + n*tlMarkSp, Y: t.Lanes[l].Y, Kind: kind, Title: title})
		}
	}
	return t
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"timeline":    buildTimeline,
	"verdict":     VerdictLine,
	"add":         func(a, b int) int { return a + b },
	"fmtDuration": fmtDuration,
	"sub":         func(a, b int) int { return a - b },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tokenlab PIN-policy lab</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}.good{color:#0a7d32;font-weight:600}
tr.violation td{background:#fde8ea}
svg text{font:11px system-ui,sans-serif}
.prompt{fill:#f59e0b}.sign{fill:#2563eb}.reuse{fill:#dc2626}.verify{fill:#6b7280}.removed,.inserted{stroke:#111;stroke-width:2}
.band{fill:#fde8ea}.lane{stroke:#ddd}
</style></head><body>
<h1>tokenlab PIN-policy lab</h1>
<p>Legend: <svg width="420" height="16"><circle class="prompt" cx="8" cy="8" r="5"/><text x="18" y="12">prompt</text>
<polygon class="reuse" points="80,3 86,13 74,13"/><text x="92" y="12">cached re-use</text>
<rect class="verify" x="180" y="5" width="7" height="7"/><text x="192" y="12">card VERIFY</text>
<rect class="sign" x="272" y="3" width="10" height="10"/><text x="288" y="12">signature</text>
<rect class="band" x="350" y="2" width="12" height="12"/><text x="366" y="12">violation</text></svg></p>
{{range $i, $r := .}}
<section class="run" id="run-{{$i}}" data-scenario="{{$r.Scenario}}" data-profile="{{$r.Profile}}">
<h2>{{$r.Scenario}} under {{$r.Profile}}</h2>
{{if $r.Title}}<p>{{$r.Title}}</p>{{end}}
<p><em>The profile reproduces:</em> {{$r.Reproduces}}</p>
<ul class="verdicts">{{range $r.Verdicts}}<li class="{{if .OK}}good{{else}}bad{{end}}">{{verdict $r .}}</li>{{end}}</ul>
{{with timeline $r}}{{$t := .}}
<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}">
<text x="4" y="14">scenario line</text>
{{range .Columns}}{{if .Violation}}<rect class="band" x="{{.X}}" y="0" width="64" height="{{$t.Height}}"><title>line {{.Line}} violates {{.Violation}}</title></rect>{{end}}
<text x="{{add .X 4}}" y="14"><title>{{.Text}}</title>{{.Line}}</text>{{end}}
{{range .Lanes}}<line class="lane" x1="0" x2="{{$t.Width}}" y1="{{.Y}}" y2="{{.Y}}"/><text x="4" y="{{add .Y 4}}">{{.Name}}</text>
{{end}}
{{range .Marks}}{{if eq .Kind "prompt"}}<circle class="prompt" cx="{{add .X 5}}" cy="{{.Y}}" r="5"><title>{{.Title}}</title></circle>
{{else if eq .Kind "reuse"}}<polygon class="reuse" points="{{add .X 5}},{{sub .Y 6}} {{add .X 11}},{{add .Y 5}} {{.X}},{{add .Y 5}}"><title>{{.Title}}</title></polygon>
{{else if eq .Kind "verify"}}<rect class="verify" x="{{add .X 1}}" y="{{sub .Y 4}}" width="7" height="7"><title>{{.Title}}</title></rect>
{{else if eq .Kind "sign"}}<rect class="sign" x="{{.X}}" y="{{sub .Y 5}}" width="10" height="10"><title>{{.Title}}</title></rect>
{{else}}<line class="{{.Kind}}" x1="{{add .X 5}}" x2="{{add .X 5}}" y1="{{sub .Y 10}}" y2="{{add .Y 10}}"><title>{{.Title}}</title></line>
{{end}}{{end}}
</svg>
{{end}}
<table class="steps"><tr><th>line</th><th>at</th><th>step</th><th>application</th><th>prompts</th><th>cached re-uses</th><th>card VERIFYs</th><th>signatures</th><th>result</th><th>verdict</th></tr>
{{range $r.Steps}}<tr{{if .Violations}} class="violation"{{end}}><td>{{.Line}}</td><td>+{{fmtDuration .At}}</td><td>{{.Text}}</td><td>{{.App}}</td><td>{{.Prompts}}</td><td>{{.Reuses}}</td><td>{{.Verifies}}</td><td>{{.Signatures}}</td><td>{{.Result}}</td><td>{{if .Violations}}<span class="bad">violates {{range $j, $v := .Violations}}{{if $j}}, {{end}}{{$v}}{{end}}</span>{{else}}ok{{end}}</td></tr>
{{end}}</table>
</section>
{{end}}
</body></html>
`))

// WriteHTML writes the runs as a self-contained HTML report with a timeline picture of each.
func WriteHTML(w io.Writer, rs []*Result) error {
	return reportTmpl.Execute(w, rs)
}
