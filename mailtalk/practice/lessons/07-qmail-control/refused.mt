# Lesson 7: a recipient at example.org: relaying (5.7.1) until rcpthosts names the
# domain, then no such user (5.1.1) until virtualdomains says whose mail it is.
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
