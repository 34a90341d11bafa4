package azureblob

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
)

// Listing bounds: discovery walks at most maxDepth levels of "/" below a
// configured prefix and keeps at most maxRoots resource prefixes per
// container; one poll lists at most maxHoursPerPoll hours per root, so an
// old start_time is caught up a week per poll.
const (
	maxDepth        = 16
	maxRoots        = 10000
	maxHoursPerPoll = 7 * 24
)

// account is the polling state of one storage account. Only its run
// goroutine touches roots and discovered.
type account struct {
	*Source
	cfg Account
	svc *service.Client

	roots      map[string][]string // container → resource prefixes, each ending just above y=YYYY/
	discovered time.Time
}

// blobRef is one listed blob.
type blobRef struct {
	container string
	name      string
	kind      blob.BlobType
	size      int64
	created   time.Time
	etag      string
}

// poll is one round over the account: rediscover resource prefixes when
// due, list the open hours of each, read every blob that grew. The
// container's resume hour advances only when everything in it succeeded,
// so an hour is never closed over a blob that failed to read.
func (a *account) poll(ctx context.Context) error {
	now := a.now().UTC()
	if a.discovered.IsZero() || now.Sub(a.discovered) >= a.Source.cfg.DiscoveryInterval {
		for _, c := range a.cfg.Containers {
			roots, err := a.discover(ctx, c)
			if err != nil {
				a.m.errors.WithLabelValues(errList).Inc()
				return fmt.Errorf("discovering %s: %w", c.Name, err)
			}
			a.roots[c.Name] = roots
		}
		a.discovered = now
	}
	var errs []error
	for _, c := range a.cfg.Containers {
		if err := a.pollContainer(ctx, c.Name, now); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
			if isThrottled(err) {
				break // the account is over its limits: back off, all of it
			}
		}
	}
	return errors.Join(errs...)
}

func (a *account) pollContainer(ctx context.Context, name string, now time.Time) error {
	rkey := resumeKey(a.cfg.Name, name)
	from, found, err := a.loadResume(rkey)
	if err != nil {
		a.m.errors.WithLabelValues(errState).Inc()
		return err
	}
	open := now.Add(-a.cfg.Lookback).Truncate(time.Hour)
	if !found {
		from = open
		if !a.cfg.StartTime.IsZero() {
			from = a.cfg.StartTime.UTC().Truncate(time.Hour)
		}
	}
	if st := a.cfg.StartTime.UTC().Truncate(time.Hour); from.Before(st) {
		from = st
	}
	last := now.Truncate(time.Hour)
	if last.Sub(from) > maxHoursPerPoll*time.Hour {
		last = from.Add(maxHoursPerPoll * time.Hour)
	}
	var prefixes []string
	for _, root := range a.roots[name] {
		for h := from; !h.After(last); h = h.Add(time.Hour) {
			prefixes = append(prefixes, root+hourPrefix(h))
		}
	}

	// List the open hours, then read what changed; both bounded by
	// concurrency. A request still throttled after the SDK's retries
	// stops the poll from starting more: they would be throttled too, and
	// the account backs off instead.
	var (
		mu        sync.Mutex
		blobs     []blobRef
		errs      []error
		throttled atomic.Bool
	)
	a.parallel(len(prefixes), func(i int) {
		if throttled.Load() {
			return
		}
		got, err := a.list(ctx, name, prefixes[i])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			a.m.errors.WithLabelValues(errList).Inc()
			errs = append(errs, fmt.Errorf("listing %s: %w", prefixes[i], err))
			throttled.CompareAndSwap(false, isThrottled(err))
			return
		}
		blobs = append(blobs, got...)
	})
	// Older hours first: their events are older, and watermarks move forward.
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].name < blobs[j].name })
	a.parallel(len(blobs), func(i int) {
		if throttled.Load() {
			return
		}
		if err := a.readBlob(ctx, blobs[i]); err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("reading %s: %w", blobs[i].name, err))
			mu.Unlock()
			throttled.CompareAndSwap(false, isThrottled(err))
		}
	})
	if len(errs) > 0 || ctx.Err() != nil {
		return errors.Join(append(errs, ctx.Err())...)
	}
	// Catching up from an old start, continue at the last hour listed, but
	// never past the open window: its hours can still grow.
	next := open
	if last.Before(open) {
		next = last
	}
	if next.After(from) {
		return a.saveResume(rkey, next)
	}
	if !found {
		return a.saveResume(rkey, from)
	}
	return nil
}

// parallel calls f(0..n-1) with at most cfg.Concurrency calls at a time.
func (a *account) parallel(n int, f func(i int)) {
	sem := make(chan struct{}, a.Source.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// hourPrefix is the hour's part of a blob name, as Azure files it.
func hourPrefix(h time.Time) string {
	return fmt.Sprintf("y=%04d/m=%02d/d=%02d/h=%02d/", h.Year(), int(h.Month()), h.Day(), h.Hour())
}

// discover walks the container's hierarchy below each configured prefix
// and returns the resource prefixes: the paths just above a `y=YYYY/`
// level (`resourceId=/SUBSCRIPTIONS/…/NSG-WEB01/`, `tenantId=<tid>/`,
// `flowLogResourceID=/…/`). Listing goes one level at a time with the "/"
// delimiter, so it costs one request per resource path segment, not one
// per blob.
func (a *account) discover(ctx context.Context, c Container) ([]string, error) {
	cc := a.svc.NewContainerClient(c.Name)
	seen := make(map[string]bool)
	var roots []string
	var walk func(prefix string, depth int) error
	walk = func(prefix string, depth int) error {
		pager := cc.NewListBlobsHierarchyPager("/", &container.ListBlobsHierarchyOptions{Prefix: &prefix})
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				if isNotFound(err) { // the container does not exist yet: Azure creates it on the first record
					return nil
				}
				return err
			}
			if page.Segment == nil {
				continue
			}
			for _, bp := range page.Segment.BlobPrefixes {
				if bp.Name == nil {
					continue
				}
				child := *bp.Name
				seg := strings.TrimSuffix(strings.TrimPrefix(child, prefix), "/")
				if i := strings.LastIndexByte(seg, '/'); i >= 0 {
					seg = seg[i+1:]
				}
				if strings.HasPrefix(seg, "y=") {
					if !seen[prefix] {
						if len(roots) >= maxRoots {
							return fmt.Errorf("more than %d resource prefixes; narrow prefixes", maxRoots)
						}
						seen[prefix] = true
						roots = append(roots, prefix)
					}
					continue
				}
				if depth < maxDepth {
					if err := walk(child, depth+1); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, p := range c.Prefixes {
		if err := walk(p, 0); err != nil {
			return nil, err
		}
	}
	sort.Strings(roots)
	return roots, nil
}

// list returns the .json blobs under one hour prefix.
func (a *account) list(ctx context.Context, cont, prefix string) ([]blobRef, error) {
	cc := a.svc.NewContainerClient(cont)
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	var out []blobRef
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if isNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		if page.Segment == nil {
			continue
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || !strings.HasSuffix(*it.Name, ".json") {
				continue
			}
			ref := blobRef{container: cont, name: *it.Name}
			p := it.Properties
			if p.BlobType != nil {
				ref.kind = *p.BlobType
			}
			if p.ContentLength != nil {
				ref.size = *p.ContentLength
			}
			if p.CreationTime != nil {
				ref.created = p.CreationTime.UTC()
			}
			if p.ETag != nil {
				ref.etag = normETag(string(*p.ETag))
			}
			out = append(out, ref)
		}
	}
	return out, nil
}

func normETag(s string) string { return strings.Trim(s, `"`) }
