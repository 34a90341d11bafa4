// Command sigmagen writes synthetic Sigma rules (rules/sigma/gen) for the
// benchmarks: sigmagen -n 500 -out DIR.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/outpost-siem/outpost/rules/sigma/gen"
)

func main() {
	n := flag.Int("n", 500, "how many rules")
	out := flag.String("out", "", "directory to write them to (created)")
	flag.Parse()
	if *out == "" || *n < 1 || *n > 100000 {
		log.Fatal("usage: sigmagen -n 1..100000 -out DIR")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := gen.Write(*out, *n); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d Sigma rules in %s (templates: %s)\n", *n, *out, gen.Names())
}
