package rules

import (
	"embed"
	"io/fs"
)

//go:embed pack
var pack embed.FS

// Pack returns the shipped rule pack, compiled. It is what Outpost runs when
// no rules dir is configured.
func Pack() (*Set, error) {
	sub, err := fs.Sub(pack, "pack")
	if err != nil {
		return nil, err
	}
	return LoadFS(sub, "rules/pack")
}
