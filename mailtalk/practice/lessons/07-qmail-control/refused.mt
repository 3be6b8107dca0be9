# Lesson 7: a recipient at example.org, which mx.example.net does not take mail for
# (or, once rcpthosts names it, does).
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.org>
S: ${EXPECT}
C: QUIT
S: 221
