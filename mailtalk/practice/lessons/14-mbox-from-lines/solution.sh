# Lesson 14 as dave's administrator: the refusal met, an envelope line put before the
# first message of the spool (into a copy, renamed over it, as an editor saves), then
# the mail fetched and the first message deleted.
set -e
mailtalk run "$LESSON/refused.mt"
spool="$MX_EXAMPLE_NET_ROOT/mail/dave/mbox"
head -n 1 "$spool"
{ echo "From backup@example.net Mon Dec  1 07:00:00 2025"; cat "$spool"; } > "$spool.new"
mv "$spool.new" "$spool"
mailtalk run "$LESSON/fetch.mt"
head -n 1 "$spool"
