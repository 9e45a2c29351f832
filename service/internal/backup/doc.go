// Package backup is plugvault's snapshot engine: Time-Machine-like snapshots of a set of source
// directories on a mounted backup drive.
//
// # Layout on the drive
//
//	<Target>/plugvault/                     root 0755
//	<Target>/plugvault/<host>/              owned by the user the engine runs as
//	    20261126T083100Z/                   a complete snapshot (UTC start time of its run), 0755
//	        .plugvault/                     0700, owned by the engine's user (it names every file)
//	        .plugvault/manifest             what the snapshot holds (format below)
//	        .plugvault/m/p-<sha256>         btrfs: packs of the manifest's segments (a run's new ones)
//	        .plugvault/manifest.dirs        btrfs: each segment's directory signature
//	        .plugvault/stats.json           Stats of the run that made it
//	        .plugvault/result.json          Result of that run (files, bytes, warnings)
//	        home/alice/...                  each source under its absolute path
//	    latest -> 20261126T083100Z          symlink, always names a complete snapshot
//	    20261126T090000Z.partial/           ext4/xfs: a run in progress or interrupted
//	    .working/                           btrfs: the working subvolume, updated in place
//	    20261101T080000Z.deleting/          a snapshot being deleted by retention
//
// A name matching YYYYMMDDTHHMMSSZ is a complete snapshot and is never modified again; only
// retention deletes it (first renaming it to <name>.deleting, so an interrupted delete never
// leaves something that looks complete). "latest" is replaced with an atomic rename after the
// snapshot it names has been made durable.
//
// # btrfs target (the default)
//
// .working is a subvolume updated in place: only changed entries are written, deleted entries
// are removed. When the run is complete, a read-only snapshot of .working is taken under the
// snapshot's name: O(1), no hard-link farm, and deleting an old snapshot is one ioctl.
// A changed file of at least 4 MiB starts as a clone (FICLONE) of the version .working holds,
// and only the 1 MiB blocks whose hash differs from the manifest's are written: a 100-byte
// append to a big file costs about one block on the drive, not the file. A smaller changed
// file is rewritten in its own inode (inplace.go: .working's inodes are shared with no
// snapshot), read whole before .working is touched; when its old content is the start of the
// new one (an append), only the new bytes are written.
//
// # ext4/xfs target
//
// A run builds <name>.partial: unchanged files and symlinks are hard links into the previous
// complete snapshot, changed ones are copied, directories are created fresh. Files linked from
// a complete snapshot are never written or chmod-ed (a metadata-only change makes a new copy).
// The partial is promoted with an atomic rename. A fresh partial is first filled with the
// whole previous snapshot (linkfarm.go: its directories with their metadata, a hard link per
// file and symlink) while the source is walked, as the two are different devices; the plan
// then treats it as a btrfs working tree: it keeps what is unchanged, replaces a changed entry
// by a new one (an atomic rename over the link) and deletes what the source no longer has.
// What the farm could not finish is left to the plan, which then cleans every directory as
// after an interrupted run. Links and directories wait on metadata reads, not on data: they
// are made by more workers (16) than copies (Job.CopyWorkers). A no-change run adds the
// directory tree and nothing else: the unchanged manifest is linked too.
//
// # Change detection
//
// The source is walked in parallel (readdir + fstatat relative to directory fds) and every
// entry is compared with what the destination is known to hold: the manifest of the working
// subvolume (btrfs) or of the previous snapshot (ext4), plus the run journal (below). The
// destination is never stat-ed per file. An entry matches when type, mode, owner, size, mtime,
// ctime, inode number and symlink target are all equal.
//
// # Manifest format
//
// A text file, first line "plugvault-manifest 1", then one line per entry (depth first, in
// name order: parents before children), fields separated by one space:
//
//	type mode uid gid size mtime ctime ino dev nlink rdev flags hash path [target]
//
// type is one of f (regular file), d, l (symlink), c, b (devices), p (fifo), s (socket); mode is
// the octal permission bits (07777); uid, gid, size, ino, dev, nlink, rdev are decimal; mtime
// and ctime are nanoseconds since the epoch (of the source entry); flags is "-" or letters
// (o: owner could not be preserved, x: some xattrs could not be preserved, c: the file kept
// changing while it was read, so the next run copies it again, a: a directory above a source,
// stored for the tree's shape, whose times are not tracked); hash is "-" or the lowercase
// hex SHA-256 of the content; path (relative to the snapshot root, "/"-separated) and target
// (symlinks only) are Go-quoted strings (strconv.Quote), so any byte sequence round-trips.
// A regular file of at least 4 MiB (hashed) ends its line with one more field,
// "blocks=<hex>": the first 16 bytes of the SHA-256 of each 1 MiB block, concatenated. Older
// readers ignore what follows the path, so manifests without it (older snapshots) and with it
// are both read by every version.
// On btrfs the manifest is segmented, so that a snapshot shares with the one before the parts
// that did not change. Each directory's entries (format 1 lines, no header) are a segment,
// named by its SHA-256; .plugvault/manifest is "plugvault-manifest 3" followed by a line per
// segment, "<name> <pack> <offset> <length>": the segment's bytes in the pack file
// .plugvault/m/<pack> ("p-" and the pack's SHA-256). A run appends the segments that do not
// exist yet to one new pack, so a run in which 950 directories changed adds one file, not 950;
// packs less than half used (and the smallest, beyond 16) have their live segments moved into
// the run's pack, and files no longer referenced are removed once the new index is durable.
// An index line of the name alone is a segment in a file of its own, m/<name>: format 2
// ("plugvault-manifest 2"), written by earlier versions, is all such lines, and is read as it
// is; a directory's segment moves into a pack when the directory changes. Segments are read
// in parallel and checked against their names. Every format is read (older snapshots have
// format 1; ext4/xfs snapshots keep it, as an unchanged manifest is one hard link there).
// Beside the index, .plugvault/manifest.dirs ("plugvault-manifest-dirs 1 <SHA-256 of the
// index>", then a line per index line) records each segment's directory signature: a SHA-256
// of its entries' fields but their content hashes, or "-". A run reads only the segments of
// the directories whose scan does not have the recorded signature, so a run in which little
// changed reads the index and a few segments, not a file per directory. Readers that predate
// it ignore it; one that does not go with its index is ignored.
//
// The journal (.plugvault/journal) has the same line format, plus lines "del <quoted path>"
// recording a removal and a first line "begin" (the run began to change the tree); it lists
// entries made durable (after syncfs) during an unfinished run.
//
// # Code layout
//
// engine.go runs one backup: open the destination, walk the sources, plan, apply, write the
// metadata, publish. destination.go is everything that differs between btrfs and ext4/xfs
// (the destination interface: prepare, open, load, publish, promote), and linkfarm.go fills
// an ext4/xfs partial tree with the previous snapshot; plan.go is the pure planner (what to
// delete, create, copy, link); update.go carries a plan out; copy.go and blocks.go write
// files; journal.go and meta.go make the run durable; privileged.go holds the root steps
// (Prepare, Promote, Prune, Run), child.go the engine child and its protocol, list.go the
// listing; memory.go the engine child's memory limit.
//
// # Memory
//
// A run holds the scan and what the destination holds (the previous manifest) for the whole
// run: about 650-800 bytes per entry (more with long paths). Entries are allocated a directory
// (walk) or 1024 (manifest) at a time, and an entry read from a manifest keeps only its own
// strings. The engine child collects garbage rarely (GOGC 400) and bounds its heap with a soft
// memory limit of 32 MiB plus 768 bytes per entry of the tree, raised as the walk finds more
// entries and never below the live heap and half as much again. Stats.MaxRSSKiB is the
// process's own peak (VmHWM).
//
// # Crash safety and resume
//
// Files are written to a temporary name and renamed into place, except btrfs's in-place rewrites:
// a run interrupted in one rewrites the file again (the source no longer matches the entry
// .working is known by), and one that fails after it began leaves the name out of the snapshot
// rather than keep a half-written file under the old entry. Every couple of seconds the engine
// calls syncfs on the target and only then appends the entries finished before it to the journal
// (and fsyncs the journal), so a journal line always describes durable data. Removals are
// journaled before they happen, and a run that changes anything first writes a "begin" line
// (fsynced). A run that finds a journal that is not empty (an interrupted run, even one killed
// before its first commit) trusts the manifest overlaid with the journal, removes names the source
// no longer has (and stale temporary files), and copies only what is not known to be there
// already. The links to the previous snapshot that fill a fresh ext4/xfs partial are not
// journaled: a run that resumes the partial does not know them and links them again.
//
// # Privileges
//
// Run does everything in process (the daemon runs it as root in tests and for system sources).
// Spawn splits the work: the root daemon calls Prepare (create plugvault/<host>/ and, on btrfs,
// the .working subvolume, owned by the engine's user), runs the unprivileged engine child
// (service/cmd/plugvault-engine: Job as JSON on stdin, progress and result as JSON lines on
// stdout), then Promote (btrfs: read-only snapshot of .working, which needs root where
// user_subvol_rm_allowed and ownership rules say no; "latest") and Prune (retention deletes,
// BTRFS_IOC_SNAP_DESTROY needs root). On ext4 the child promotes its partial itself.
// SpawnRestore and SpawnVerify run the same child with the caller's credentials; their
// progress lines carry only the bytes of regular files done and the manifest's total.
//
// # Mount guard
//
// Before the first write and after every batch (1000 entries or 256 MiB) the guard is called;
// an error stops the run (what was written stays resumable). The guard is mount.Guard: Target
// must be the root of the last mount on it and its device must be Job.Dev (for btrfs, whose
// st_dev is anonymous, the filesystem's own device list).
//
// # Security
//
// Every path below a source or the target is opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) relative to the root's directory fd, and the last component with
// O_NOFOLLOW (or an *at call that never follows), so a symlink swapped in at any moment cannot
// redirect a read or a write. Symlinks are stored as symlinks; devices, fifos and sockets are
// recorded and recreated (devices only as root), never opened. The source paths themselves come
// from the root-owned configuration and are opened as given.
package backup
