// Command interop checks worm-pipeline's checkpoints and proofs with Go's reference
// implementations: golang.org/x/mod/sumdb/note (note.Open) and sumdb/tlog
// (tlog.CheckRecord, tlog.CheckTree).  It reads a JSON file written by the Python test
// and exits non-zero on the first failure.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index      int64    `json:"index"`
	TreeSize   int64    `json:"tree_size"`
	Leaf       string   `json:"leaf"`
	Hashes     []string `json:"hashes"`
	Checkpoint string   `json:"checkpoint"`
}

type consistency struct {
	OldSize       int64    `json:"old_size"`
	Size          int64    `json:"size"`
	Hashes        []string `json:"hashes"`
	OldCheckpoint string   `json:"old_checkpoint"`
	Checkpoint    string   `json:"checkpoint"`
}

type input struct {
	Vkey        string        `json:"vkey"`
	Signer      string        `json:"signer"`
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
	MustFail    []inclusion   `json:"must_fail"`
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// openCheckpoint verifies the note and parses origin, size, root (tlog-checkpoint).
func openCheckpoint(v note.Verifier, text string) (int64, tlog.Hash) {
	n, err := note.Open([]byte(text), note.VerifierList(v))
	if err != nil {
		die("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		die("checkpoint too short")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		die("size: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		die("root: %v", err)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return size, h
}

func hashes(hexes []string) []tlog.Hash {
	out := make([]tlog.Hash, len(hexes))
	for i, s := range hexes {
		raw, err := hex.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			die("bad hash %q", s)
		}
		copy(out[i][:], raw)
	}
	return out
}

func checkInclusion(v note.Verifier, p inclusion) error {
	size, root := openCheckpoint(v, p.Checkpoint)
	if size != p.TreeSize {
		return fmt.Errorf("size mismatch")
	}
	leaf, err := base64.StdEncoding.DecodeString(p.Leaf)
	if err != nil {
		return err
	}
	return tlog.CheckRecord(tlog.RecordProof(hashes(p.Hashes)), p.TreeSize, root, p.Index, tlog.RecordHash(leaf))
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		die("%v", err)
	}
	var in input
	if err := json.Unmarshal(data, &in); err != nil {
		die("json: %v", err)
	}
	v, err := note.NewVerifier(in.Vkey)
	if err != nil {
		die("note.NewVerifier: %v", err)
	}
	// our signer key string must be accepted by note.NewSigner and match the verifier
	s, err := note.NewSigner(in.Signer)
	if err != nil {
		die("note.NewSigner: %v", err)
	}
	if s.Name() != v.Name() || s.KeyHash() != v.KeyHash() {
		die("signer and verifier keys disagree")
	}
	signed, err := note.Sign(&note.Note{Text: "go signed this\n"}, s)
	if err != nil {
		die("note.Sign: %v", err)
	}
	if _, err := note.Open(signed, note.VerifierList(v)); err != nil {
		die("note.Open of Go-signed note: %v", err)
	}
	for _, p := range in.Inclusion {
		if err := checkInclusion(v, p); err != nil {
			die("tlog.CheckRecord index %d size %d: %v", p.Index, p.TreeSize, err)
		}
	}
	for _, p := range in.MustFail {
		if err := checkInclusion(v, p); err == nil {
			die("tlog.CheckRecord accepted a tampered proof for index %d", p.Index)
		}
	}
	for _, p := range in.Consistency {
		oldSize, oldRoot := openCheckpoint(v, p.OldCheckpoint)
		size, root := openCheckpoint(v, p.Checkpoint)
		if oldSize != p.OldSize || size != p.Size {
			die("consistency sizes mismatch")
		}
		if err := tlog.CheckTree(tlog.TreeProof(hashes(p.Hashes)), size, root, oldSize, oldRoot); err != nil {
			die("tlog.CheckTree %d -> %d: %v", oldSize, size, err)
		}
	}
	fmt.Printf("ok: %d inclusion, %d consistency, %d rejected\n", len(in.Inclusion), len(in.Consistency), len(in.MustFail))
}
