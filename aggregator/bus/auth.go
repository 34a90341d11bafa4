package bus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Who may talk to the embedded server.
//
// The server has no anonymous user. Two nkey users exist:
//
//   - Outpost itself: a key pair generated at every start and kept in memory
//     only, allowed on in-process connections only, with every permission.
//     It is the only client that can publish to events.>, matches.>,
//     alerts.>, deadletter.> and statelog.> or change streams and consumers.
//   - the reader, only when nats.listen opens the client port: its seed is
//     generated into <data_dir>/nats/reader.nk (mode 0600) on first start and
//     kept across restarts, for the `nats` CLI (`nats --nkey <file> ...`).
//     It is read-only; see readerPermissions for exactly what it may do.
//
// Outpost's own connection uses an inbox prefix the reader cannot subscribe
// to, so the reader does not see the replies Outpost's consumers receive.

// ReaderKeyFile is where the reader's nkey seed lives under the data dir.
func ReaderKeyFile(dataDir string) string { return filepath.Join(dataDir, "nats", "reader.nk") }

// internalInboxPrefix is the inbox prefix of Outpost's own connection.
const internalInboxPrefix = "_OUTPOST_INBOX"

// readerPermissions let the reader look without touching: list and inspect
// streams and consumers, get stored messages by sequence or last-by-subject,
// and subscribe to the live subjects.
//
// Deliberately not granted, because JetStream cannot tell the reader's
// consumers from Outpost's by subject (a consumer's name is free-form, and a
// create request naming an existing consumer updates it): creating, updating,
// deleting or pausing consumers, fetching from them ($JS.API.CONSUMER.MSG.NEXT,
// which would take alerts from the forwarder) and acking ($JS.ACK.>, which
// would mark alerts sent that never were). Hence `nats stream view`, which
// creates a consumer, is refused; `nats stream get` and `nats sub` work.
// Nothing that creates, updates, purges, deletes, snapshots or restores a
// stream is granted, nor any publish to Outpost's subjects.
func readerPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.INFO.*",
			"$JS.API.STREAM.MSG.GET.*",
			"$JS.API.DIRECT.GET.*",
			"$JS.API.DIRECT.GET.*.>",
			"$JS.API.CONSUMER.NAMES.*",
			"$JS.API.CONSUMER.LIST.*",
			"$JS.API.CONSUMER.INFO.*.*",
			"$SYS.REQ.USER.INFO",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			"_INBOX.>",
			"events.>", "matches.>", "alerts.>", "deadletter.>",
		}},
	}
}

// serverUsers returns the embedded server's users and Outpost's own key.
// With listen set it loads or creates the reader's key and fails if it
// cannot: the port is never opened without it.
func serverUsers(cfg Config, dataDir string) ([]*server.NkeyUser, nkeys.KeyPair, bool, error) {
	self, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, false, fmt.Errorf("generating outpost's nats key: %w", err)
	}
	selfPub, err := self.PublicKey()
	if err != nil {
		return nil, nil, false, fmt.Errorf("generating outpost's nats key: %w", err)
	}
	users := []*server.NkeyUser{{
		Nkey:                   selfPub,
		AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}},
	}}
	if cfg.Listen == "" {
		return users, self, false, nil
	}
	readerPub, created, err := loadOrCreateReaderKey(ReaderKeyFile(dataDir))
	if err != nil {
		return nil, nil, false, fmt.Errorf("nats.listen: setting up the reader's credentials: %w", err)
	}
	users = append(users, &server.NkeyUser{
		Nkey:                   readerPub,
		Permissions:            readerPermissions(),
		AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeStandard: {}},
	})
	return users, self, created, nil
}

// loadOrCreateReaderKey returns the public key of the seed in path,
// creating the seed (and its directory) if there is none. A seed file that
// others may read is refused rather than silently trusted.
func loadOrCreateReaderKey(path string) (pub string, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createReaderKey(path); err != nil {
			return "", false, err
		}
		created = true
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", false, fmt.Errorf("reading %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", false, fmt.Errorf("checking %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("%s is readable by others (mode %04o); chmod 600 it", path, st.Mode().Perm())
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", false, fmt.Errorf("parsing %s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err = kp.PublicKey()
	if err != nil {
		return "", false, fmt.Errorf("parsing %s: %w", path, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", false, fmt.Errorf("%s does not hold an nkey user seed", path)
	}
	return pub, created, nil
}

// createReaderKey writes a new user seed to path, mode 0600, atomically: a
// crash leaves either no file or a whole one.
func createReaderKey(path string) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("generating the reader's key: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("generating the reader's key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".reader-*.nk")
	if err != nil {
		return fmt.Errorf("creating the reader's key file: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing to remove
	content := "# Outpost's NATS reader: read-only access to the embedded server.\n" +
		"# nats --server nats://<nats.listen> --nkey " + path + " stream ls\n" +
		string(seed) + "\n"
	_, werr := f.WriteString(content)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("writing the reader's key file: %w", err)
	}
	// CreateTemp already made it 0600; say so in case of an odd umask-free FS.
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		return fmt.Errorf("writing the reader's key file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing the reader's key file: %w", err)
	}
	return nil
}
