# Lesson 2 done by hand: run against a practice world with its variables
# (mailtalk practice --vars prints them; the tests pass them with --var).
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
data <<END
Subject: hello from the practice world

Hi Bob, this came by hand.
END
S: 250
C: QUIT
S: 221
