# Lesson 7: a message to info@example.org, which virtualdomains gives to Bob.
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<info@example.org>
S: 250
data <<END
Subject: for example.org

Hello.
END
S: 250
C: QUIT
S: 221
