# Lesson 8 from a terminal: refused, the record added to the world's DNS file (read
# again within a second), asked, accepted.
set -e
EXPECT=5xx mailtalk run "$LESSON/mail-from.mt"
echo "my-company.test MX 10 mail.isp.test" >> "$NS_ISP_TEST_ROOT/dns/records"
sleep 2
mailtalk mx my-company.test --resolver "$NS_ISP_TEST_DNS" --brief
EXPECT=250 mailtalk run "$LESSON/mail-from.mt"
