# Lesson 15 from a terminal: the message bounces (the wrong MX); the DNS and rcpthosts
# fixed; sent again, it arrives; Bob fetches it.
set -e
mailtalk run "$LESSON/send.mt"
sleep 3  # the provider tries mail.stranger.test at once, which refuses: a bounce
mailtalk mx friends.test --resolver "$NS_ISP_TEST_DNS" --brief || true
echo "friends.test MX 5 mx.example.net" >> "$NS_ISP_TEST_ROOT/dns/records"
echo friends.test >> "$MX_EXAMPLE_NET_ROOT/control/rcpthosts"
sleep 2  # the DNS reads its records again within a second
mailtalk mx friends.test --resolver "$NS_ISP_TEST_DNS" --brief
mailtalk run "$LESSON/send.mt"
sleep 3  # delivered by the provider's queue
mailtalk run "$LESSON/fetch.mt"
