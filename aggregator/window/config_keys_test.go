package window

import (
	"strings"
	"testing"
)

// cache_keys and checkpoint_keys default to 100,000 each, and a negative
// one is refused by name.
func TestConfigKeys(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.CacheKeys != 100_000 || c.CheckpointKeys != 100_000 {
		t.Errorf("defaults: cache_keys %d, checkpoint_keys %d; want 100000 each", c.CacheKeys, c.CheckpointKeys)
	}
	c = Config{CacheKeys: -1, CheckpointKeys: -1}
	err := c.Validate()
	if err == nil {
		t.Fatal("negative cache_keys and checkpoint_keys accepted")
	}
	for _, name := range []string{"windows.cache_keys", "windows.checkpoint_keys"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}
