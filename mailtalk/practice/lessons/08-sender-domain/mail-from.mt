# Lesson 8: MAIL FROM at my-company.test; ${EXPECT} is 5xx before its DNS record, 250 after.
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<you@my-company.test>
S: ${EXPECT}
C: QUIT
S: 221
