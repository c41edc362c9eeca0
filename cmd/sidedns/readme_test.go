package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the flag table in README.md")

const (
	flagTableStart = "<!-- flag table: generated from sidedns --help by `go test ./cmd/sidedns -run TestREADMEFlagTable -update-readme` -->\n"
	flagTableEnd   = "<!-- end of flag table -->\n"
)

// flagTable renders the flags as --help describes them, as a Markdown table.
func flagTable() string {
	var c config
	var b strings.Builder
	b.WriteString("| flag | env | default | what it does |\n| --- | --- | --- | --- |\n")
	for _, s := range flagSpecs(&c) {
		def := s.value.String()
		switch {
		case s.repeatable:
			def = "see text"
		case def == "":
			def = "none"
		}
		name := "`--" + s.name + " " + strings.ReplaceAll(s.arg, "|", `\|`) + "`"
		if s.repeatable {
			name += " (repeatable)"
		}
		help := strings.ReplaceAll(s.help, "|", `\|`)
		b.WriteString("| " + name + " | `" + envName(s.name) + "` | `" + def + "` | " + help + " |\n")
	}
	return b.String()
}

// The README's flag table and sidedns --help come from the same flag specs;
// this keeps the README from drifting.
func TestREADMEFlagTable(t *testing.T) {
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(readme, []byte(flagTableStart))
	end := bytes.Index(readme, []byte(flagTableEnd))
	if start < 0 || end < start {
		t.Fatalf("README.md has no flag table markers:\n%s%s", flagTableStart, flagTableEnd)
	}
	want := flagTable()
	got := string(readme[start+len(flagTableStart) : end])
	if got == want {
		return
	}
	if *updateREADME {
		out := append([]byte{}, readme[:start+len(flagTableStart)]...)
		out = append(out, want...)
		out = append(out, readme[end:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's flag table differs from sidedns --help; run go test ./cmd/sidedns -run TestREADMEFlagTable -update-readme\ngot:\n%s\nwant:\n%s", got, want)
}

// Every flag is documented in --help, with its argument, env twin and text.
func TestHelpListsEveryTableFlag(t *testing.T) {
	var help bytes.Buffer
	printUsage(&help)
	var c config
	for _, s := range flagSpecs(&c) {
		for _, want := range []string{"--" + s.name + " " + s.arg, envName(s.name), s.help} {
			if !strings.Contains(help.String(), want) {
				t.Errorf("%q is not in --help", want)
			}
		}
	}
}
